"""Load the API's named queries from every .sql file here, once."""
import pathlib

from queueing.sql import load

queries = load(pathlib.Path(__file__).parent)
