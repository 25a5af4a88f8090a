"""Developer tools run from the checkout (bash dev.sh ...); not part of the installed package."""
