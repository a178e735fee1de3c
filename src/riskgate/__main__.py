from riskgate.cli import main

raise SystemExit(main())
