"""The simulated inference server (`befori-tui sim`): an engine model behind an OpenAI-compatible API.

Import-light on purpose: uvicorn and Starlette load only in the server process (app.py, cli.serve).
"""

from befori_tui.sim.launch import SimProcess, start_sim
from befori_tui.sim.profile import Profile, list_profiles, load_profile

__all__ = ["Profile", "SimProcess", "list_profiles", "load_profile", "start_sim"]
