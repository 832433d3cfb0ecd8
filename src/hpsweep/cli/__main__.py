from hpsweep.cli import main

main()
