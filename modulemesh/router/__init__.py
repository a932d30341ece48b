"""The graph executor: one router per ModuleGraph, serving the graph as a v2 model."""
