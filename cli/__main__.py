from backupkit_cli.main import run

run()
