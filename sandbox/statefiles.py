"""Names of the files a sandbox keeps in its state directory (shared by the server and `control`)."""

INFO_FILE = "sandbox.json"  # written by `up` once healthy: endpoints, pid, instance id
PID_FILE = "sandbox.pid"
LOG_FILE = "sandbox.log"
SERVER_FILE = "sandbox.server.json"  # written by the server once it listens (ports, pid, instance id)
