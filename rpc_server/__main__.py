from rpc_server.cli import main

raise SystemExit(main())
