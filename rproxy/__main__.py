from rproxy.cli import main

raise SystemExit(main())
