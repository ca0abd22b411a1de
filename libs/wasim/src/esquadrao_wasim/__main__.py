from esquadrao_wasim.cli import app

app()
