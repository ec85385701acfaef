#!/usr/bin/env sh
# Run the model's checks with spin (see README.md and run.py --help).
exec python3 "$(dirname "$0")/run.py" "$@"
