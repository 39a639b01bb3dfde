"""The Jacobian of the retraining map: one module per method behind one operator
interface, and the analyzer that takes its spectrum."""

from stabfw.analysis.jacobian.analyzer import METHODS, JacobianAnalyzer, JacobianResult
from stabfw.analysis.jacobian.dense import map_jacobian
from stabfw.analysis.jacobian.operator import JacobianOperator, Linearization

__all__ = ["METHODS", "JacobianAnalyzer", "JacobianOperator", "JacobianResult", "Linearization",
           "map_jacobian"]
