from meshtalk.cli import main

main()
