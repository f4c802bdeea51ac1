"""Types of the compiled HTTP/1.1 request parser: the same interface as ``_h1_py``."""

from meshproxy.http._h1_py import RequestHead as RequestHead
from meshproxy.http._h1_py import RequestParser as RequestParser
