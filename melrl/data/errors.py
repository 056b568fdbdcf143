"""The one error the data package raises for a dataset that cannot be found, fetched, read or parsed."""


class DatasetError(ValueError):
    """A dataset that cannot be found, fetched, read or parsed; the message names the dataset or file and the fix."""
