from meshtalk.cli import run

run()
