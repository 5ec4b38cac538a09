from jouled.cli import main

raise SystemExit(main())
