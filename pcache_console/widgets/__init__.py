"""The console's widgets: header, fleet table, prefix heat map, drift chart."""
