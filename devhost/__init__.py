"""A development host for the function app: Azurite + HTTP + queue listeners + timers.

For development, demos and tests on one machine only. It is NOT deployed (see `.funcignore`) and
nothing in `loadme/` imports it. In Azure the Functions host does this job; where Azure Functions
Core Tools are installed, `func start` runs the same `function_app.py` and `host.json`.
"""
