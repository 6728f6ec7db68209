from rnnexport.cli import console_main

if __name__ == "__main__":  # worker processes (--jobs) import this module without running the CLI
    console_main()
