"""The console's screens: confirmation modals, help, and the replica drill-down."""
