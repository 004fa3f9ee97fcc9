from tssh.cli.main import main

raise SystemExit(main())
