from p2psync.cli.main import main

main()
