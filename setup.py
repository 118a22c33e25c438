"""Only what pyproject.toml cannot say: the packages (found, as `include = ["befori_tui*"]` would) plus the
top-level themes/ folder, installed as befori_tui/themes. The design keeps the themes at the top of the
repository, where users put their own beside ours; the wheel carries them inside the package so an installed
befori-tui finds them (befori_tui/ui/themes.py: bundled_theme_dir)."""

from setuptools import find_packages, setup

setup(packages=find_packages(include=["befori_tui*"]) + ["befori_tui.themes"],
      package_dir={"befori_tui.themes": "themes"})
