from kgprobe.cli import main

main()
