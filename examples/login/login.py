"""A small login, as `ssh` does it: first asks whether to trust a new host
key (unless LOGIN_ASKS=password), then for a password. Prompts end without
a newline and wait, as a person's terminal shows them."""

import os
import sys

asks = os.environ.get("LOGIN_ASKS", "key")
if asks == "key":
    answer = input("The host key is new. Accept it (yes/no)? ")
    if answer.strip() != "yes":
        print("refused")
        sys.exit(1)
    print("key accepted")
password = input("Password: ")
if password != "opensesame":
    print("denied")
    sys.exit(1)
print("welcome")
