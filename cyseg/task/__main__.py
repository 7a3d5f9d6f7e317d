"""`python -m cyseg.task [--inputs DIR] [--outputs DIR]`: run the App Engine task once."""
import sys

from cyseg.task.run import main

sys.exit(main())
