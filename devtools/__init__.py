"""Developer tools that are not part of the product: the run command and the one process toolkit that it, the
tests, the benchmarks and the screenshot script share. Nothing under portal/ imports this package."""
