import sys

from conformance.fuzz.differential import main

sys.exit(main())
