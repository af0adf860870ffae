"""Names of the files a sandbox keeps in its state directory (shared by the server and `control`)."""

INFO_FILE = "sandbox.json"  # written by `up` once healthy: endpoints, pid, instance id
PID_FILE = "sandbox.pid"
LOG_FILE = "sandbox.log"
SERVER_FILE = "sandbox.server.json"  # written by the server once it listens (ports, pid, instance id)
DEPLOYER_KEY_FILE = "sandbox-deployer-key.json"  # service-account key written by the server (token_uri = the sandbox)
OUTSIDER_KEY_FILE = "sandbox-outsider-key.json"  # a second account without any role
KEY_FILES = (DEPLOYER_KEY_FILE, OUTSIDER_KEY_FILE)
