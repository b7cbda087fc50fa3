//! Layers with named parameters: convolution, batch norm and the conv-BN-leaky-ReLU block.
//!
//! A [`Param`] owns a leaf [`Var`]. Forward passes read the leaf, so a step's graph refers to the
//! parameter values it was computed with; an optimiser step replaces the leaf with a new one
//! holding the updated values. Parameter names follow PyTorch's module paths
//! (`features.0.conv.weight`), so state can be compared with and loaded from PyTorch exports.

mod layers;

pub use layers::{BatchNorm2d, Conv2d, ConvBlock};

use std::collections::HashMap;

use crate::autograd::Var;
use crate::element::Element;
use crate::error::{Error, Result};
use crate::tensor::{Device, Tensor};

/// A named trainable tensor.
#[derive(Clone)]
pub struct Param<T: Element> {
    name: String,
    var: Var<T>,
}

impl<T: Element> Param<T> {
    /// Creates a parameter that requires a gradient.
    pub fn new(name: impl Into<String>, value: Tensor<T>) -> Self {
        Param {
            name: name.into(),
            var: Var::param(value),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Returns the leaf that forward passes use.
    pub fn var(&self) -> &Var<T> {
        &self.var
    }

    pub fn value(&self) -> &Tensor<T> {
        self.var.value()
    }

    /// Replaces the value, keeping the name and whether it requires a gradient.
    pub fn set_value(&mut self, value: Tensor<T>) -> Result<()> {
        if value.dims() != self.var.dims() {
            return Err(Error::shape(
                "Param::set_value",
                format!("new value for {} has the wrong shape", self.name),
                &[self.var.dims(), value.dims()],
            ));
        }
        self.var = Var::leaf(value, self.var.requires_grad());
        Ok(())
    }

    /// Turns gradient tracking on or off, as freezing a trained network does.
    pub fn set_requires_grad(&mut self, requires_grad: bool) {
        self.var = Var::leaf(self.var.value().clone(), requires_grad);
    }
}

/// A network or layer that exposes its parameters and its full state by name.
pub trait Module<T: Element> {
    /// Returns the trainable parameters, in a fixed order.
    fn params(&self) -> Vec<&Param<T>>;

    /// Returns the trainable parameters mutably, in the same order as [`Module::params`].
    fn params_mut(&mut self) -> Vec<&mut Param<T>>;

    /// Returns every tensor of the state: parameters and buffers such as running statistics.
    fn state(&self) -> Vec<(String, Tensor<T>)>;

    /// Loads every state tensor from `lookup`, which returns the tensor stored under a name.
    fn load_state(&mut self, lookup: &dyn Fn(&str) -> Option<Tensor<T>>) -> Result<()>;

    /// Returns the leaves of the parameters, for `grad()` calls.
    fn param_vars(&self) -> Vec<Var<T>> {
        self.params().into_iter().map(|p| p.var().clone()).collect()
    }

    /// Freezes or unfreezes every parameter.
    fn set_requires_grad(&mut self, requires_grad: bool) {
        for param in self.params_mut() {
            param.set_requires_grad(requires_grad);
        }
    }

    /// Counts the trainable scalars.
    fn num_params(&self) -> usize {
        self.params().iter().map(|p| p.value().numel()).sum()
    }

    /// Moves every state tensor, parameters and buffers alike, to `device`. Parameters keep
    /// their names and whether they require a gradient.
    fn to_device(&mut self, device: &Device) -> Result<()> {
        let moved = self
            .state()
            .into_iter()
            .map(|(name, tensor)| Ok((name, tensor.to_device(device)?)))
            .collect::<Result<HashMap<String, Tensor<T>>>>()?;
        self.load_state(&|name| moved.get(name).cloned())
    }
}

/// Fetches `name` from `lookup` and checks its shape, for [`Module::load_state`].
pub(crate) fn load_tensor<T: Element>(
    lookup: &dyn Fn(&str) -> Option<Tensor<T>>,
    name: &str,
    dims: &[usize],
) -> Result<Tensor<T>> {
    let tensor =
        lookup(name).ok_or_else(|| Error::Message(format!("state tensor {name} is missing")))?;
    if tensor.dims() != dims {
        return Err(Error::shape(
            "load_state",
            format!("state tensor {name} has the wrong shape"),
            &[tensor.dims(), dims],
        ));
    }
    Ok(tensor)
}
