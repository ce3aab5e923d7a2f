"""Board farms: measure through a labgrid place (``place.py``), and a virtual bench that
publishes the virtual lab's devices as ptys an exporter can share (``virtual_bench.py``).

labgrid is optional (``pip install 'tinypower[labgrid]'``): only ``place.py`` imports it, and
only when a run asks for a place.
"""
