from rnnexport.cli import main

raise SystemExit(main())
