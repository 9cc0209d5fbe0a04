from ctgtp.cli import main

main()
