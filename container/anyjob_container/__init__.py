"""anyjob's generic SageMaker container: ``train`` and ``serve`` for any user script.

The package is the whole image: ``python -m anyjob_container train|serve`` is what the
Dockerfile's entry point runs, and what the local backend runs without Docker.
"""

__version__ = "0.1.0"
