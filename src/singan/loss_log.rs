//! Losses of recent training iterations, collected on the training device until the trainer
//! reads them.
//!
//! Reading a loss from a GPU waits for every kernel queued before it, which stops the host from
//! queueing the next iteration while the GPU works. The trainer therefore copies each
//! iteration's loss tensors into one device buffer, with copies that queue and do not wait, and
//! reads the whole buffer with one transfer when it logs.

use crate::error::{Error, Result};
use crate::singan::step::{CriticLossTensors, CriticLosses, GeneratorLossTensors, GeneratorLosses};
use crate::tensor::{Device, Tensor};

/// Loss values stored per iteration: critic, real, fake, penalty, generator, reconstruction,
/// adversarial.
const VALUES_PER_ITERATION: usize = 7;

/// The losses of one iteration, read back to the host.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IterationLosses {
    pub iteration: usize,
    /// The learning rate the iteration ran at.
    pub lr: f64,
    pub critic: CriticLosses,
    /// `None` for an iteration without a generator step.
    pub generator: Option<GeneratorLosses>,
}

/// Host record of a stored iteration, whose values are in the device buffer.
#[derive(Clone, Copy, Debug)]
struct StoredIteration {
    iteration: usize,
    lr: f64,
    has_penalty: bool,
    has_generator: bool,
}

/// A device buffer with room for the losses of `capacity` iterations.
pub struct LossLog {
    values: Tensor<f32>,
    stored: Vec<StoredIteration>,
    capacity: usize,
}

impl LossLog {
    /// Creates an empty log for up to `capacity` iterations on `device`.
    pub fn new(capacity: usize, device: &Device) -> Result<Self> {
        if capacity == 0 {
            return Err(Error::invalid(
                "LossLog::new",
                "a loss log needs room for at least 1 iteration",
            ));
        }
        Ok(LossLog {
            values: Tensor::zeros_on([capacity, VALUES_PER_ITERATION], device)?,
            stored: Vec::with_capacity(capacity),
            capacity,
        })
    }

    /// Queues copies of one iteration's losses into the buffer. Fails when the log is full.
    /// [`LossLog::read`] empties it.
    pub fn push(
        &mut self,
        iteration: usize,
        lr: f64,
        critic: &CriticLossTensors<f32>,
        generator: Option<&GeneratorLossTensors<f32>>,
    ) -> Result<()> {
        if self.is_full() {
            return Err(Error::invalid(
                "LossLog::push",
                format!(
                    "the log holds {} iterations already; read it before storing iteration {iteration}",
                    self.capacity
                ),
            ));
        }
        let row = self.stored.len() * VALUES_PER_ITERATION;
        let mut terms = vec![&critic.critic, &critic.real, &critic.fake];
        terms.extend(&critic.gradient_penalty);
        for (column, term) in terms.into_iter().enumerate() {
            self.values.write_at(row + column, term)?;
        }
        if let Some(generator) = generator {
            let terms = [
                &generator.generator,
                &generator.reconstruction,
                &generator.adversarial,
            ];
            for (column, term) in terms.into_iter().enumerate() {
                self.values.write_at(row + 4 + column, term)?;
            }
        }
        self.stored.push(StoredIteration {
            iteration,
            lr,
            has_penalty: critic.gradient_penalty.is_some(),
            has_generator: generator.is_some(),
        });
        Ok(())
    }

    pub fn is_full(&self) -> bool {
        self.stored.len() == self.capacity
    }

    pub fn is_empty(&self) -> bool {
        self.stored.is_empty()
    }

    /// Copies the stored losses to the host in one transfer, waiting for the GPU when the log
    /// is there, and empties the log. Returns the iterations in the order they were stored.
    pub fn read(&mut self) -> Result<Vec<IterationLosses>> {
        if self.stored.is_empty() {
            return Ok(Vec::new());
        }
        let values = self.values.to_cpu()?;
        let values = values.as_slice();
        let read = self
            .stored
            .drain(..)
            .enumerate()
            .map(|(index, stored)| {
                let row = &values[index * VALUES_PER_ITERATION..(index + 1) * VALUES_PER_ITERATION];
                let value = |column: usize| f64::from(row[column]);
                IterationLosses {
                    iteration: stored.iteration,
                    lr: stored.lr,
                    critic: CriticLosses {
                        critic: value(0),
                        real: value(1),
                        fake: value(2),
                        gradient_penalty: if stored.has_penalty { value(3) } else { 0.0 },
                    },
                    generator: stored.has_generator.then(|| GeneratorLosses {
                        generator: value(4),
                        reconstruction: value(5),
                        adversarial: value(6),
                    }),
                }
            })
            .collect();
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(value: f32) -> Tensor<f32> {
        Tensor::scalar(value)
    }

    fn critic(base: f32, penalty: Option<f32>) -> CriticLossTensors<f32> {
        CriticLossTensors {
            critic: scalar(base),
            real: scalar(base + 0.25),
            fake: scalar(base + 0.5),
            gradient_penalty: penalty.map(scalar),
        }
    }

    fn generator(base: f32) -> GeneratorLossTensors<f32> {
        GeneratorLossTensors {
            generator: scalar(base),
            reconstruction: scalar(base + 1.0),
            adversarial: scalar(base + 2.0),
        }
    }

    #[test]
    fn read_returns_stored_iterations_in_order() {
        let mut log = LossLog::new(3, &Device::Cpu).unwrap();
        log.push(4, 0.5, &critic(1.0, Some(0.125)), Some(&generator(10.0)))
            .unwrap();
        log.push(5, 0.25, &critic(-2.0, None), None).unwrap();
        assert!(!log.is_full());

        let read = log.read().unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].iteration, 4);
        assert_eq!(read[0].lr, 0.5);
        assert_eq!(
            read[0].critic,
            CriticLosses {
                critic: 1.0,
                real: 1.25,
                fake: 1.5,
                gradient_penalty: 0.125,
            }
        );
        assert_eq!(
            read[0].generator,
            Some(GeneratorLosses {
                generator: 10.0,
                reconstruction: 11.0,
                adversarial: 12.0,
            })
        );
        assert_eq!(read[1].iteration, 5);
        assert_eq!(read[1].critic.critic, -2.0);
        assert_eq!(
            read[1].critic.gradient_penalty, 0.0,
            "no penalty reads as 0"
        );
        assert_eq!(read[1].generator, None);
        assert!(log.is_empty());
    }

    #[test]
    fn reused_row_drops_old_values() {
        let mut log = LossLog::new(1, &Device::Cpu).unwrap();
        log.push(0, 1.0, &critic(3.0, Some(9.0)), Some(&generator(7.0)))
            .unwrap();
        log.read().unwrap();
        log.push(1, 1.0, &critic(4.0, None), None).unwrap();
        let read = log.read().unwrap();
        assert_eq!(read[0].critic.gradient_penalty, 0.0);
        assert_eq!(read[0].generator, None);
    }

    #[test]
    fn full_log_rejects_another_iteration() {
        let mut log = LossLog::new(1, &Device::Cpu).unwrap();
        log.push(0, 1.0, &critic(0.0, None), None).unwrap();
        assert!(log.is_full());
        let message = log
            .push(1, 1.0, &critic(0.0, None), None)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("read it before storing iteration 1"),
            "{message}"
        );
        assert_eq!(log.read().unwrap().len(), 1);
        assert!(log.push(1, 1.0, &critic(0.0, None), None).is_ok());
    }

    #[test]
    fn zero_capacity_is_rejected() {
        let message = LossLog::new(0, &Device::Cpu).err().unwrap().to_string();
        assert!(message.contains("at least 1 iteration"), "{message}");
    }

    #[test]
    fn empty_log_reads_nothing() {
        let mut log = LossLog::new(2, &Device::Cpu).unwrap();
        assert!(log.read().unwrap().is_empty());
    }
}
