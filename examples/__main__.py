from examples.cli import main

raise SystemExit(main())
