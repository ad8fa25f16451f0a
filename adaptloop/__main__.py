from adaptloop.cli import app

app(prog_name="adaptloop")
