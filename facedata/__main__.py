from facedata.cli import main

main()
