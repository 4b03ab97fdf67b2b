"""loadme: run container jobs on Azure Container Instances from Azure Functions.

The library every function shares. Importable and testable without the Functions host;
heavy Azure SDK imports happen lazily inside the factories that need them.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
