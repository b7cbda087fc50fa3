//! Loss functions built from taped ops.

use crate::autograd::Var;
use crate::element::Element;
use crate::error::{Error, Result};

impl<T: Element> Var<T> {
    /// Returns the mean squared error `mean((self - target)^2)`, with shape `[1]`.
    pub fn mse(&self, target: &Var<T>) -> Result<Var<T>> {
        if self.dims() != target.dims() {
            return Err(Error::shape(
                "mse",
                "prediction and target must have the same shape",
                &[self.dims(), target.dims()],
            ));
        }
        self.sub(target)?.square()?.mean()
    }

    /// Returns the binary cross-entropy of logits against a constant label (1 or 0), averaged:
    /// `mean softplus(-x)` for label 1 and `mean softplus(x)` for label 0.
    pub fn bce_with_logits(&self, label_is_real: bool) -> Result<Var<T>> {
        if label_is_real {
            self.neg()?.softplus()?.mean()
        } else {
            self.softplus()?.mean()
        }
    }
}
