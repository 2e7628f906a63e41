/* Every op Tessera knows, once. Each line names the tsr_op_def defined in
 * the family file given in the comment; adding an op is one line here and
 * its definition there. Expanded with a TSR_OP(id) macro. */

/* unary.c: element-wise math and activations */
TSR_OP(Abs)
TSR_OP(Neg)
TSR_OP(Relu)
TSR_OP(LeakyRelu)
TSR_OP(Elu)
TSR_OP(Selu)
TSR_OP(Clip)
TSR_OP(Sigmoid)
TSR_OP(HardSigmoid)
TSR_OP(HardSwish)
TSR_OP(Tanh)
TSR_OP(Erf)
TSR_OP(Exp)
TSR_OP(Log)
TSR_OP(Sqrt)
TSR_OP(Reciprocal)
TSR_OP(Floor)
TSR_OP(Ceil)
TSR_OP(Softplus)
TSR_OP(Silu) /* domain ai.tessera, x sigmoid(x) */
TSR_OP(Not)
TSR_OP(BitwiseNot)
TSR_OP(ReluGrad) /* domain ai.tessera, Relu's backward from its output */
TSR_OP(ClipGrad) /* domain ai.tessera, Clip's backward */
TSR_OP(SiluGrad) /* domain ai.tessera, Silu's backward */

/* binary.c: broadcasting element-wise ops with two or more inputs */
TSR_OP(Add)
TSR_OP(Sub)
TSR_OP(Mul)
TSR_OP(Div)
TSR_OP(Pow)
TSR_OP(Max)
TSR_OP(Min)
TSR_OP(Sum)
TSR_OP(Equal)
TSR_OP(Less)
TSR_OP(Greater)
TSR_OP(LessOrEqual)
TSR_OP(GreaterOrEqual)
TSR_OP(And)
TSR_OP(Or)
TSR_OP(Xor)
TSR_OP(BitwiseAnd)
TSR_OP(BitwiseOr)
TSR_OP(BitwiseXor)
TSR_OP(Where)
TSR_OP(Mod)

/* conv.c */
TSR_OP(Conv)

/* conv_transpose.c: Conv's adjoint in its input, on Conv's backward kernel */
TSR_OP(ConvTranspose)

/* pool.c */
TSR_OP(MaxPool)
TSR_OP(AveragePool)
TSR_OP(GlobalAveragePool)
TSR_OP(GlobalMaxPool)

/* norm.c */
TSR_OP(BatchNormalization)
TSR_OP(LayerNormalization)
TSR_OP(InstanceNormalization)
TSR_OP(GroupNormalization)

/* matmul.c */
TSR_OP(Gemm)
TSR_OP(MatMul)
TSR_OP(Einsum)

/* reduce.c: reductions over axes, softmax */
TSR_OP(ReduceMean)
TSR_OP(ReduceSum)
TSR_OP(ReduceMax)
TSR_OP(ReduceMin)
TSR_OP(ReduceProd)
TSR_OP(ReduceL1)
TSR_OP(ReduceL2)
TSR_OP(ReduceLogSum)
TSR_OP(ReduceLogSumExp)
TSR_OP(ReduceSumSquare)
TSR_OP(Softmax)
TSR_OP(LogSoftmax)

/* shape.c: ops that only reinterpret the shape */
TSR_OP(Shape)
TSR_OP(Reshape)
TSR_OP(Flatten)
TSR_OP(Squeeze)
TSR_OP(Unsqueeze)
TSR_OP(Expand)
TSR_OP(Identity)
TSR_OP(Dropout)

/* control.c: If, whose branches are sub-graphs expanded where cond is known,
 * and Loop, whose body is unrolled where its trip count and conditions are */
TSR_OP(If)
TSR_OP(Loop)

/* movement.c: ops that move data around */
TSR_OP(Transpose)
TSR_OP(Concat)
TSR_OP(Split)
TSR_OP(Slice)
TSR_OP(Gather)
TSR_OP(Pad)
TSR_OP(Tile)

/* gather.c: gathers and scatters by index tensors, the scatters' reductions */
TSR_OP(GatherElements)
TSR_OP(GatherND)
TSR_OP(GatherNDGrad) /* domain ai.tessera, GatherND's adjoint */
TSR_OP(ScatterElements)
TSR_OP(ScatterND)

/* rnn.c: LSTM, GRU and RNN, expanded into the ops above once the sequence length is known */
TSR_OP(LSTM)
TSR_OP(GRU)
TSR_OP(RNN)
TSR_OP(LSTMCell) /* domain ai.tessera: one plain LSTM step after its products */

/* trilu.c: upper and lower triangles of batched matrices */
TSR_OP(Trilu)

/* cumsum.c: running sums along an axis */
TSR_OP(CumSum)

/* col2im.c: blocks of taps summed back into an image */
TSR_OP(Col2Im)

/* onehot.c: one-hot encoding of index tensors */
TSR_OP(OneHot)

/* topk.c: the K largest or smallest along an axis, its backward op, ArgMax and ArgMin */
TSR_OP(TopK)
TSR_OP(TopKGrad) /* domain ai.tessera, dValues scattered back to X's shape */
TSR_OP(ArgMax)
TSR_OP(ArgMin)

/* nonzero.c: the indices of nonzero elements, a shape known only at run time */
TSR_OP(NonZero)

/* resize.c: Resize and the older Upsample */
TSR_OP(Resize)
TSR_OP(Upsample)

/* roialign.c: RoiAlign, bilinear pooling of boxes, and its backward op */
TSR_OP(RoiAlign)
TSR_OP(RoiAlignGrad) /* domain ai.tessera, dY spread back over the sampled taps */

/* nms.c: NonMaxSuppression, a count of boxes known only at run time */
TSR_OP(NonMaxSuppression)

/* constant.c: constants, casts and index generators */
TSR_OP(Constant)
TSR_OP(ConstantOfShape)
TSR_OP(Cast)
TSR_OP(CastLike)
TSR_OP(Range)

/* dpp.c: Detail-Preserving Pooling (domain ai.tessera) */
TSR_OP(DetailPreservingPool)
TSR_OP(DetailPreservingPoolGrad)

/* grad_*.c: backward ops that gradient rules build (domain ai.tessera) */
TSR_OP(ConvGradInput)
TSR_OP(ConvGradFilter)
TSR_OP(MaxPoolGrad)
TSR_OP(MaxPoolGather)
TSR_OP(AveragePoolGrad)
TSR_OP(GatherGrad)
TSR_OP(SumTo)
TSR_OP(ResizeGrad) /* in resize.c, beside Resize */
TSR_OP(SliceGrad)  /* in movement.c, beside Slice */

/* training.c: training-mode forms the trainer substitutes (domain ai.tessera) */
TSR_OP(BatchNormTrain)
TSR_OP(BatchNormTrainGrad)
TSR_OP(DropoutTrain)

/* loss.c: losses and their backward ops (domain ai.tessera) */
TSR_OP(SoftmaxCrossEntropy)
TSR_OP(SoftmaxCrossEntropyGrad)
TSR_OP(RegressionLoss)
TSR_OP(RegressionLossGrad)

/* fused.c: ops the optimization passes produce (domain ai.tessera) */
TSR_OP(FusedConv)

/* ict.c: irreducible Cartesian tensors and their products (domain ai.tessera) */
TSR_OP(ICT)
TSR_OP(ICTProduct)

/* ict_edge.c: the fused edge convolution of ICTP (domain ai.tessera) */
TSR_OP(ICTEdgeMessage)
TSR_OP(ICTEdgeMessageGrad)

/* radial.c: the Bessel radial basis with the polynomial cutoff, tabulated
 * radial functions (domain ai.tessera) */
TSR_OP(BesselBasis)
TSR_OP(RadialSpline)
TSR_OP(RadialSplineDot)
