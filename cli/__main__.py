from backupkit_cli.entry import run

run()
