#!/usr/bin/python3
"""A short causeway conversation from Python: alice greets bob, bob answers.

Usage: /usr/bin/python3 example.py [ENDPOINT]
(default $CAUSEWAY_ENDPOINT, else tcp://127.0.0.1:7400). Start a broker
first, e.g. build/broker/causeway-broker --bind tcp://127.0.0.1:7400, and
install the package (../README.md), or put build/python on PYTHONPATH.

Prints what each side sent and received with the vector clocks, and exits
0 when the round trip worked, 1 if not.
"""

import os
import sys

import causeway   # the installed package (clients/python/README.md, "Installing")


def wait_for_message(client, timeout=5.0):
    """The next delivery for client, skipping presence events; None if none
    comes within timeout seconds of quiet."""
    for event in client.events(timeout=timeout):
        if event.kind == "deliver":
            return event
    return None


def main():
    endpoint = (sys.argv[1] if len(sys.argv) > 1
                else os.environ.get("CAUSEWAY_ENDPOINT", causeway.DEFAULT_ENDPOINT))
    try:
        with causeway.Client(endpoint, name="example-alice") as alice, \
                causeway.Client(endpoint, name="example-bob") as bob:
            sent = alice.send("example-bob", "hello bob")
            print(f"alice -> bob: {sent['example-bob'].status}, clock {sent.clock}")

            msg = wait_for_message(bob)
            if msg is None:
                print("bob got nothing", file=sys.stderr)
                return 1
            print(f"bob got {msg.text!r} from {msg.sender}, stamped {msg.clock}, "
                  f"his clock now {msg.local_clock}")

            bob.send(msg.sender, "hi alice, got it")
            reply = wait_for_message(alice)
            if reply is None:
                print("alice got nothing", file=sys.stderr)
                return 1
            print(f"alice got {reply.text!r}; clocks: alice {alice.clock_str()}, "
                  f"bob {bob.clock_str()}")
    except causeway.CausewayError as e:
        print(f"causeway: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
