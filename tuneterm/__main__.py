from tuneterm.cli import main

raise SystemExit(main())
