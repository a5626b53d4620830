from vidbatch.cli.main import main

main()
