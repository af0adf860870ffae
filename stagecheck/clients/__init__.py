"""Small wrappers around the outside world (Cloud Run, Cloud Logging, Docker, registries), built once
from Settings. They translate library exceptions into StageError with a readable message."""
