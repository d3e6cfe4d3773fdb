"""The application on top of the library: command line, workflows, figures.

``cli`` is the ``openmm-ddpm`` command; ``alanine_dipeptide`` the built-in
molecular workflow (build the system, run augmented parallel tempering,
analyse the run from its storage); ``double_well`` the toy workflows whose
answers are known exactly; ``plots`` the PNG figures. May import every
library subpackage; nothing in the library imports it.
"""
