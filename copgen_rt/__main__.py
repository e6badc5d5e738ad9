from copgen_rt.entry import main

main()
