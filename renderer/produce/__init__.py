"""One job's way from rendered pixels to written files (``worker``): the values it passes
(``job``), finishing (``finishing``), scoring (``scoring``), metadata (``metadata``) and
channel exports (``exports``).
"""
