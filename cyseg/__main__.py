from cyseg.cli import main

raise SystemExit(main())
