from facedata.cli import run

run()
