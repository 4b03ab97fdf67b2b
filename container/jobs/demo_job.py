"""Demo job: reads `___Name` (and the optional `___Greeting`), adds `___Message`.

Shows the round trip: variables arrive as environment variables; new ones are appended as
`NAME=value` lines to the file named by `LOADME_OUTPUT`. For trying failure handling it also
honours `___DemoSleepSeconds` (sleep first) and `___DemoExitCode` (exit with that code).
"""

import os
import sys
import time

prefix = os.environ.get("LOADME_PREFIX", "___")
name = os.environ.get(prefix + "Name", "world")
greeting = os.environ.get(prefix + "Greeting", "Hello")
time.sleep(float(os.environ.get(prefix + "DemoSleepSeconds", "0")))
message = f"{greeting}, {name}!"
print(f"demo job: {message}")
with open(os.environ["LOADME_OUTPUT"], "a") as output:
    output.write(f"{prefix}Message={message}\n")
sys.exit(int(os.environ.get(prefix + "DemoExitCode", "0")))
