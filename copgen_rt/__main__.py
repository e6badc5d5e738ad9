from copgen_rt.cli import main

main()
