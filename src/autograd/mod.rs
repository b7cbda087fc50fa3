//! Reverse-mode automatic differentiation that can differentiate its own backward pass.
//!
//! A [`Var`] is a node of the graph: a value, the op that produced it and, when the op was
//! recorded, its inputs and a backward function. Backward functions compute gradients with the
//! same taped ops as forward code, so running [`grad`] with `create_graph = true` records the
//! backward pass itself and its results can be differentiated again. This is what a gradient
//! penalty needs: the norm of the critic's input gradient is differentiated with respect to the
//! critic's weights.
//!
//! Node ids increase with creation, and an op's inputs always exist before its output, so sorting
//! the reachable nodes by decreasing id gives a valid reverse topological order. The graph is held
//! by reference counts: dropping the last `Var` of a step frees every activation it kept.

mod mode;

pub use mode::{is_grad_enabled, no_grad, GradModeGuard};

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::element::Element;
use crate::error::{Error, Result};
use crate::tensor::{Shape, Tensor};

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Arguments of a backward function.
pub struct BackwardArgs<'a, T: Element> {
    /// The op's inputs, in the order the op was called with.
    pub inputs: &'a [Var<T>],
    /// The op's output, for ops whose derivative is cheapest in terms of it (tanh, sqrt).
    pub output: &'a Var<T>,
    /// The gradient of the differentiated quantity with respect to `output`.
    pub grad_output: &'a Var<T>,
    /// `needs[i]` is false when no requested gradient depends on input `i`, so it may be skipped.
    pub needs: &'a [bool],
}

/// A backward function: returns one gradient per input (`None` for inputs without one).
pub type BackwardFn<T> = Box<dyn Fn(&BackwardArgs<'_, T>) -> Result<Vec<Option<Var<T>>>>>;

struct GradFn<T: Element> {
    inputs: Vec<Var<T>>,
    backward: BackwardFn<T>,
}

struct Node<T: Element> {
    id: u64,
    op: &'static str,
    value: Tensor<T>,
    requires_grad: bool,
    grad_fn: Option<GradFn<T>>,
    /// Gradient accumulated by [`Var::backward`]; only leaves keep one.
    grad: RefCell<Option<Tensor<T>>>,
}

/// A tensor in the autograd graph.
///
/// Cloning a `Var` is cheap and refers to the same node.
pub struct Var<T: Element>(Rc<Node<T>>);

impl<T: Element> Clone for Var<T> {
    fn clone(&self) -> Self {
        Var(Rc::clone(&self.0))
    }
}

impl<T: Element> std::fmt::Debug for Var<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Var")
            .field("id", &self.0.id)
            .field("op", &self.0.op)
            .field("shape", &self.0.value.dims())
            .field("requires_grad", &self.0.requires_grad)
            .finish()
    }
}

impl<T: Element> Var<T> {
    fn new_node(
        op: &'static str,
        value: Tensor<T>,
        requires_grad: bool,
        grad_fn: Option<GradFn<T>>,
    ) -> Self {
        Var(Rc::new(Node {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            op,
            value,
            requires_grad,
            grad_fn,
            grad: RefCell::new(None),
        }))
    }

    /// Creates a leaf; gradients are computed for it when `requires_grad` is true.
    pub fn leaf(value: Tensor<T>, requires_grad: bool) -> Self {
        Self::new_node("leaf", value, requires_grad, None)
    }

    /// Creates a trainable leaf (`requires_grad = true`).
    pub fn param(value: Tensor<T>) -> Self {
        Self::leaf(value, true)
    }

    /// Creates a constant leaf that never receives a gradient.
    pub fn constant(value: Tensor<T>) -> Self {
        Self::leaf(value, false)
    }

    /// Records the output of op `op`, computed from `inputs`, with its backward function.
    ///
    /// Nothing is recorded in no-grad mode or when no input requires a gradient: the result is
    /// then a constant and the inputs are not kept alive by it.
    pub fn from_op(
        op: &'static str,
        value: Tensor<T>,
        inputs: &[&Var<T>],
        backward: impl Fn(&BackwardArgs<'_, T>) -> Result<Vec<Option<Var<T>>>> + 'static,
    ) -> Self {
        let track = is_grad_enabled() && inputs.iter().any(|input| input.requires_grad());
        if !track {
            return Self::new_node(op, value, false, None);
        }
        let grad_fn = GradFn {
            inputs: inputs.iter().map(|&input| input.clone()).collect(),
            backward: Box::new(backward),
        };
        Self::new_node(op, value, true, Some(grad_fn))
    }

    pub fn value(&self) -> &Tensor<T> {
        &self.0.value
    }

    pub fn shape(&self) -> &Shape {
        self.0.value.shape()
    }

    pub fn dims(&self) -> &[usize] {
        self.0.value.dims()
    }

    pub fn numel(&self) -> usize {
        self.0.value.numel()
    }

    /// The label of the op that produced this node (`"leaf"` for leaves).
    pub fn op(&self) -> &'static str {
        self.0.op
    }

    pub fn id(&self) -> u64 {
        self.0.id
    }

    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad
    }

    pub fn is_leaf(&self) -> bool {
        self.0.grad_fn.is_none()
    }

    /// Returns a constant with the same value, cut off from the graph.
    pub fn detach(&self) -> Var<T> {
        Var::constant(self.0.value.clone())
    }

    /// Returns the gradient that [`Var::backward`] accumulated into this leaf, if any.
    pub fn grad(&self) -> Option<Tensor<T>> {
        self.0.grad.borrow().clone()
    }

    /// Clears the accumulated gradient of this leaf.
    pub fn zero_grad(&self) {
        *self.0.grad.borrow_mut() = None;
    }

    /// Returns the single element of a one-element value.
    pub fn item(&self) -> Result<T> {
        self.0.value.item()
    }

    /// Back-propagates from this one-element output and adds the gradients into every leaf that
    /// requires one, as `loss.backward()` does in PyTorch.
    pub fn backward(&self) -> Result<()> {
        if self.numel() != 1 {
            return Err(Error::Autograd(format!(
                "backward() needs a one-element output, but {} has shape {:?}; \
                 use grad() with explicit grad_outputs",
                self.op(),
                self.dims()
            )));
        }
        let seed = Var::constant(Tensor::ones_on(self.shape(), &self.value().device())?);
        let leaves = reachable_leaves(std::slice::from_ref(self));
        let grads = grad(std::slice::from_ref(self), &leaves, Some(&[seed]), false)?;
        for (leaf, grad) in leaves.iter().zip(grads) {
            let Some(grad) = grad else { continue };
            let mut slot = leaf.0.grad.borrow_mut();
            *slot = Some(match slot.take() {
                None => grad.value().clone(),
                Some(previous) => crate::ops::elementwise::add_values(&previous, grad.value())?,
            });
        }
        Ok(())
    }
}

/// Returns the leaves that require a gradient and that `outputs` depend on, in id order.
fn reachable_leaves<T: Element>(outputs: &[Var<T>]) -> Vec<Var<T>> {
    let mut leaves = Vec::new();
    for node in collect_graph(outputs) {
        if node.is_leaf() && node.requires_grad() {
            leaves.push(node);
        }
    }
    leaves.sort_by_key(|leaf| leaf.id());
    leaves
}

/// Collects every node that requires a gradient and is reachable from `outputs`.
fn collect_graph<T: Element>(outputs: &[Var<T>]) -> Vec<Var<T>> {
    let mut seen = HashSet::new();
    let mut stack: Vec<Var<T>> = outputs
        .iter()
        .filter(|v| v.requires_grad())
        .cloned()
        .collect();
    let mut nodes = Vec::new();
    while let Some(node) = stack.pop() {
        if !seen.insert(node.id()) {
            continue;
        }
        if let Some(grad_fn) = &node.0.grad_fn {
            for input in &grad_fn.inputs {
                if input.requires_grad() && !seen.contains(&input.id()) {
                    stack.push(input.clone());
                }
            }
        }
        nodes.push(node);
    }
    nodes
}

/// Computes the gradients of `outputs` with respect to `inputs`, like `torch.autograd.grad`.
///
/// `grad_outputs[i]` weights output `i`; when `None`, every output must have one element and is
/// weighted by 1. The result contains one entry per input, `None` where the input does not affect
/// the outputs. With `create_graph = true` the backward pass is recorded, so the returned
/// gradients can be differentiated again; otherwise it runs in no-grad mode and the results are
/// constants.
pub fn grad<T: Element>(
    outputs: &[Var<T>],
    inputs: &[Var<T>],
    grad_outputs: Option<&[Var<T>]>,
    create_graph: bool,
) -> Result<Vec<Option<Var<T>>>> {
    let seeds = seed_gradients(outputs, grad_outputs)?;

    // Order the graph and mark the nodes that lead to a requested input.
    let mut nodes = collect_graph(outputs);
    nodes.sort_by_key(|node| node.id());
    let targets: HashSet<u64> = inputs.iter().map(|input| input.id()).collect();
    let mut needed: HashSet<u64> = HashSet::new();
    for node in &nodes {
        let leads_to_target = targets.contains(&node.id())
            || node.0.grad_fn.as_ref().is_some_and(|grad_fn| {
                grad_fn
                    .inputs
                    .iter()
                    .any(|input| needed.contains(&input.id()))
            });
        if leads_to_target {
            needed.insert(node.id());
        }
    }

    let _mode = GradModeGuard::new(create_graph);
    let mut grads: HashMap<u64, Var<T>> = HashMap::new();
    for (output, seed) in outputs.iter().zip(seeds) {
        if needed.contains(&output.id()) {
            accumulate(&mut grads, output, seed)?;
        }
    }

    // Walk in reverse creation order; each node's gradient is complete when it is reached.
    for node in nodes.iter().rev() {
        if !needed.contains(&node.id()) {
            continue;
        }
        let Some(grad_fn) = &node.0.grad_fn else {
            continue;
        };
        let Some(grad_output) = grads.get(&node.id()).cloned() else {
            continue;
        };
        if !targets.contains(&node.id()) {
            grads.remove(&node.id());
        }
        let needs: Vec<bool> = grad_fn
            .inputs
            .iter()
            .map(|input| needed.contains(&input.id()))
            .collect();
        let args = BackwardArgs {
            inputs: &grad_fn.inputs,
            output: node,
            grad_output: &grad_output,
            needs: &needs,
        };
        let input_grads = (grad_fn.backward)(&args)?;
        if input_grads.len() != grad_fn.inputs.len() {
            return Err(Error::Autograd(format!(
                "backward of {} returned {} gradients for {} inputs",
                node.op(),
                input_grads.len(),
                grad_fn.inputs.len()
            )));
        }
        for ((input, input_grad), need) in grad_fn.inputs.iter().zip(input_grads).zip(&needs) {
            let Some(input_grad) = input_grad else {
                continue;
            };
            if !need {
                continue;
            }
            if input_grad.dims() != input.dims() {
                return Err(Error::Autograd(format!(
                    "backward of {} produced a gradient of shape {:?} for an input of shape {:?}",
                    node.op(),
                    input_grad.dims(),
                    input.dims()
                )));
            }
            accumulate(&mut grads, input, input_grad)?;
        }
    }

    Ok(inputs
        .iter()
        .map(|input| grads.get(&input.id()).cloned())
        .collect())
}

/// Checks `grad_outputs` against `outputs`, or builds ones for one-element outputs.
fn seed_gradients<T: Element>(
    outputs: &[Var<T>],
    grad_outputs: Option<&[Var<T>]>,
) -> Result<Vec<Var<T>>> {
    match grad_outputs {
        Some(seeds) => {
            if seeds.len() != outputs.len() {
                return Err(Error::Autograd(format!(
                    "grad() got {} outputs but {} grad_outputs",
                    outputs.len(),
                    seeds.len()
                )));
            }
            for (output, seed) in outputs.iter().zip(seeds) {
                if output.dims() != seed.dims() {
                    return Err(Error::Autograd(format!(
                        "grad_outputs entry has shape {:?} but its output ({}) has shape {:?}",
                        seed.dims(),
                        output.op(),
                        output.dims()
                    )));
                }
            }
            Ok(seeds.to_vec())
        }
        None => outputs
            .iter()
            .map(|output| {
                if output.numel() == 1 {
                    let device = output.value().device();
                    Ok(Var::constant(Tensor::ones_on(output.shape(), &device)?))
                } else {
                    Err(Error::Autograd(format!(
                        "grad() without grad_outputs needs one-element outputs, but {} has \
                         shape {:?}",
                        output.op(),
                        output.dims()
                    )))
                }
            })
            .collect(),
    }
}

/// Adds `grad` into the gradient stored for `node`, recording the sum when grad mode is on.
fn accumulate<T: Element>(
    grads: &mut HashMap<u64, Var<T>>,
    node: &Var<T>,
    grad: Var<T>,
) -> Result<()> {
    let total = match grads.remove(&node.id()) {
        None => grad,
        Some(previous) => previous.add(&grad)?,
    };
    grads.insert(node.id(), total);
    Ok(())
}
