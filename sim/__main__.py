from sim.app import entry

entry()
